from .model import BACKBONES, MattingBase, MattingRefine

__all__ = ['BACKBONES', 'MattingBase', 'MattingRefine']
