"""unetr_lib: the small, tested library behind the book
*Transformers for Brain Tumour Segmentation: from FCN to Swin UNETR*.

Every model in :mod:`unetr_lib.nets` is written from scratch in plain PyTorch, reads like the
paper it comes from, and loads MONAI's weights (:func:`unetr_lib.nets.load_monai_state_dict`).
"""

__version__ = "0.1.0"
