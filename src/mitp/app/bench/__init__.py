"""What the methods cost, side by side on one backbone (``mitp bench``).

``step`` (``settings``, ``protocol``, ``measure``, ``render``): one worker process per method (a fresh
process forked from a server that has only imported the libraries, ``app/launch.py``, so memory figures
start from a clean process) builds the backbone and the method once and keeps them. The parent drives
the measurement in rounds: in every round it asks each worker in turn, never two at once, to run
``steps`` timed training steps and ``steps`` timed inference passes. Drift of a shared machine therefore
hits every method alike, and the medians are taken over all rounds.

* Training step: what ``mitp train`` does per batch (without mixed precision): forward
  with labels, backward, gradient clipping (``train.max_grad_norm`` default), AdamW
  step, zero_grad, reading the loss. Only the learning-rate scheduler is left out.
  Timed as wall time and as process CPU time (all threads; CPU only).
* Inference pass: forward without labels under ``torch.no_grad`` in eval mode.
* Peak memory of training: what the training steps add on top of the built model,
  peak over every training step (warm-up included: step 1 has no AdamW state yet).
  CPU: growth of the peak resident set (VmHWM, reset after building through
  ``/proc/self/clear_refs``) in the method's own fresh process. CUDA: peak of
  ``torch.cuda.max_memory_allocated`` during the training steps minus what was
  allocated before them (weights and the input batch).

Inputs are random but well formed (``Backbone.random_batch``, fixed seed); random
weights are fine because speed and memory do not depend on them.

The other benchmarks: ``profile`` (a step's operators), ``epochs`` (an epoch in each method's best mode),
``inference`` (eager PyTorch against the ONNX graphs), ``serving`` and ``load`` (`mitp serve`), all on
``model`` (a random model as a deployment loads it).
"""

from __future__ import annotations

from .epochs import epoch_benchmark
from .epochs import render as render_epochs
from .inference import inference_benchmark
from .inference import render as render_inference
from .load import load_benchmark, render_load
from .measure import run_benchmark
from .profile import profile_step
from .profile import render as render_profiles
from .render import render_table, to_markdown
from .serving import render as render_serve
from .serving import serve_benchmark
from .settings import REQUIRED_KEYS, ROW_KEYS, BenchError, BenchResult, BenchSettings, Target, method_names

__all__ = [
    "REQUIRED_KEYS",
    "ROW_KEYS",
    "BenchError",
    "BenchResult",
    "BenchSettings",
    "Target",
    "epoch_benchmark",
    "inference_benchmark",
    "load_benchmark",
    "method_names",
    "profile_step",
    "render_epochs",
    "render_inference",
    "render_load",
    "render_profiles",
    "render_serve",
    "render_table",
    "run_benchmark",
    "serve_benchmark",
    "to_markdown",
]
