"""Cold-start SFT (ASTER stage 1): cross-entropy on policy tokens of tool-use trajectories."""

from jaxalign.sft.step import make_sft_step, sft_loss_terms

__all__ = ["make_sft_step", "sft_loss_terms"]
