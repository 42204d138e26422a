"""Cold-start SFT (ASTER stage 1): cross-entropy on policy tokens of tool-use trajectories."""

from jaxalign.sft.step import TrainState, init_train_state, make_sft_step, sft_loss_terms

__all__ = ["TrainState", "init_train_state", "make_sft_step", "sft_loss_terms"]
