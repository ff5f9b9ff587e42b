from gsimclr.loss.ntxent import NTXentLoss, nt_xent

__all__ = ["NTXentLoss", "nt_xent"]
