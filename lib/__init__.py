"""monosemantic — dictionary learning on a one-layer transformer, after *Towards Monosemanticity* (2023).

The public API::

    from monosemantic import preset, run_pipeline, Run                 # the whole recipe, resumable
    from monosemantic import train_dictionary, DictionaryConfig, SAETrainConfig, Dictionary
    from monosemantic import SubjectModel                              # TransformerLens behind one adapter
    from monosemantic import Steering, Edit, find_automata             # interventions, feature automata
"""
from .config import (CorpusConfig, DictSpec, EvalConfig, HarvestConfig, LMTrainConfig, ModelConfig, RunConfig,
                     SAETrainConfig, TokenizerConfig, preset)
from .errors import (CheckpointMismatchError, ConfigError, CorpusError, CorruptArtifactError, MonosemanticError,
                     RunLockedError, TrainingDivergedError)
from .sae import (Dictionary, DictionaryConfig, available_kinds, available_recipes, geometric_median, make_dictionary,
                  register_kind)
from . import kinds as _builtin_kinds  # noqa: E402,F401  registers topk, batchtopk, jumprelu (relu: in .sae)
from . import recipes as _builtin_recipes  # noqa: E402,F401  registers april2024, tm2023_lowmode

__all__ = [
    "CorpusConfig", "DictSpec", "EvalConfig", "HarvestConfig", "LMTrainConfig", "ModelConfig", "RunConfig",
    "SAETrainConfig", "TokenizerConfig", "preset", "CheckpointMismatchError", "ConfigError", "CorpusError",
    "CorruptArtifactError", "MonosemanticError", "RunLockedError", "TrainingDivergedError", "Dictionary", "DictionaryConfig", "available_kinds",
    "available_recipes",
    "geometric_median", "make_dictionary", "register_kind", "train_dictionary", "run_pipeline", "Run",
    "SubjectModel", "ActivationStore", "export_saelens", "import_saelens", "Steering", "Edit", "find_automata",
]


def __getattr__(name):  # heavy modules (torch-heavy trainers, TransformerLens) load on first use
    if name == "train_dictionary":
        from .train_sae import train_dictionary
        return train_dictionary
    if name == "run_pipeline":
        from .pipeline import run_pipeline
        return run_pipeline
    if name == "Run":
        from .runs import Run
        return Run
    if name == "SubjectModel":
        from .subject import SubjectModel
        return SubjectModel
    if name == "ActivationStore":
        from .activations import ActivationStore
        return ActivationStore
    if name in ("Steering", "Edit"):
        from . import interventions
        return getattr(interventions, name)
    if name == "find_automata":
        from .automata import find_automata
        return find_automata
    if name in ("export_saelens", "import_saelens"):
        from . import interop
        return getattr(interop, name)
    raise AttributeError(name)
