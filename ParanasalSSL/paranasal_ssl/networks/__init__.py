"""Networks of the four stages, built from MONAI blocks.

All take and return ``(B, C, D, H, W)`` float tensors; crops are ``(B, 1, S, S, S)`` in [0, 1].
"""

from paranasal_ssl.networks.cae import CAEEnsemble, ConvAutoencoder3D, build_cae, cae_signature
from paranasal_ssl.networks.classifier import SinusClassifier, build_classifier
from paranasal_ssl.networks.encoder import ResNetEncoder3D, build_encoder
from paranasal_ssl.networks.pretext import ResidualPredictor, build_pretext

__all__ = [
    "CAEEnsemble", "ConvAutoencoder3D", "build_cae", "cae_signature", "ResNetEncoder3D",
    "build_encoder", "ResidualPredictor", "build_pretext", "SinusClassifier", "build_classifier",
]
