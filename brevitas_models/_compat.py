"""Fix-ups for dependency defects, applied from our own code (never by editing site-packages).

brevitas 0.13.0 (pinned by finn-plus 1.6.1) strips tensor names with `Tensor.rename(None)`
before every quantized layer. torch 2.13 removed named tensors and with them
`Tensor.rename`, so every Brevitas forward fails. Names no longer exist, so dropping them is
the identity: restore exactly that, and refuse anything else.
"""
import torch


def _rename_none(self, *names, **rename_map):
    if names in ((), (None,)) and not rename_map:
        return self
    raise NotImplementedError("named tensors were removed in torch 2.13")


if not hasattr(torch.Tensor, "rename"):
    torch.Tensor.rename = _rename_none
