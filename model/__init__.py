from .model import BACKBONES, MattingBase, MattingRefine
