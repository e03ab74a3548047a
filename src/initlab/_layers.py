"""The torch module types initlab treats alike, named through torch's public classes only
(no ``nn.modules.conv._ConvNd``-style private bases)."""

from torch import nn

#: Convolutions, transposed ones included (``LazyConv*`` are subclasses).
CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
#: The layers with a weight that has fans: what ``init_model_`` and ``record`` act on.
LAYERS = (nn.Linear, *CONVS)
#: Norm layers that may keep running statistics (``track_running_stats``).
BATCH_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
