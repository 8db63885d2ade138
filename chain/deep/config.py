"""What every torch model's config section shares: the trainer's settings (one trainer for all)."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from chain.schema import ModelSection


class DeepTraining(ModelSection):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0)  # Adam
    lr_step_epochs: int | None = Field(None, ge=1)  # step decay: lr x lr_gamma every this many epochs
    lr_gamma: float = Field(0.5, gt=0, le=1)
    class_weights: bool = False  # cross-entropy weighted by inverse class frequency
    # early stopping: epochs without improvement of the fused head's loss (validation polygons with 64/16/20, else the
    # training loss); null: run all epochs. The best epoch's weights are kept either way
    patience: int | None = Field(20, ge=1)
    aux_weight: float = Field(0.3, ge=0)  # weight of each auxiliary (per-branch) classifier's loss
    dropout: float = Field(0.4, ge=0, lt=1)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    num_workers: int = Field(0, ge=0)  # DataLoader workers (CUDA); 0 = in the training process
    max_samples_per_class: int | None = Field(None, ge=1)  # cap on training patches per class (after sample's caps)
    inference_batch: int = Field(2048, ge=1)  # pixels per forward pass when classifying (classify.inference_batch overrides it)
    # CPU threads of training (torch.set_num_threads); null = the cores allotted to this process (SLURM / PBS
    # allocation, affinity, cgroup quota): torch's own default counts the machine's cores and oversubscribes shared nodes
    torch_threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _device(self) -> DeepTraining:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self
