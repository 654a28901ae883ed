"""Option values the command line and the core share, importable without torch (a fast --help)."""

#: what a run may ask a dataset to train on; "auto" lets the dataset choose
INPUT_CHOICES = ("auto", "features", "images")
DEFAULT_IMAGE_BACKBONE = "resnet50"
DEFAULT_TEXT_MODEL = "bert-base-uncased"
#: environment variable naming the default text model (a hub name or a local folder)
TEXT_MODEL_VARIABLE = "XRM_TEXT_MODEL"
#: the floating-point precisions a run can train in
DTYPES = ("float32", "float64")
#: seconds between two checkpoints of a run (0: at every evaluation)
DEFAULT_CHECKPOINT_SECONDS = 60.0
