"""The networks of the book, written from scratch: ViT pieces, UNETR, Swin UNETR, a 3D U-Net, SETR."""

from .blocks import ResConvBlock, TokenUpsampler, UpBlock
from .factory import MODELS, build_model
from .monai_compat import load_monai_state_dict, monai_key_to_ours
from .setr import SETR
from .swin_unetr import SwinUNETR
from .unet import UNet3D
from .unetr import MONAI_TAPS, UNETR, count_parameters
from .vit import MLP, MultiHeadSelfAttention, PatchEmbedding, TransformerBlock, ViT

__all__ = [
    "MLP", "MODELS", "MONAI_TAPS", "MultiHeadSelfAttention", "PatchEmbedding", "ResConvBlock", "SETR", "SwinUNETR",
    "TokenUpsampler", "TransformerBlock", "UNETR", "UpBlock",
    "UNet3D", "ViT", "build_model", "count_parameters", "load_monai_state_dict", "monai_key_to_ours",
]
