"""`nlpssl ...` under a multi-process launcher, recording the training rows each rank is given.

Used by tests/test_pretrain.py: ``torchrun --nproc_per_node 2 tests/ddp_probe.py pretrain RECIPE ...``
runs the real command line (``nlpssl.cli.main``) and appends one hash per training row, with the
masking undone, to ``$NLPSSL_PROBE_DIR/rank<RANK>.txt``, and one hash per batch as trained on (masks
included) with its step number to ``batches<RANK>.txt``.
"""

import hashlib
import os
import sys

import torch

from nlpssl.cli import main
from nlpssl.training import PretrainTrainer

_training_step = PretrainTrainer.training_step


def recording_training_step(self, model, inputs, *args, **kwargs):
    ids, labels = inputs["input_ids"], inputs.get("labels")
    rows = ids if labels is None else torch.where(labels != -100, labels, ids)  # the rows before masking
    rank, where = os.environ.get("RANK", "0"), os.environ["NLPSSL_PROBE_DIR"]
    with open(os.path.join(where, f"rank{rank}.txt"), "a") as f:
        f.writelines(hashlib.sha1(str(row).encode()).hexdigest() + "\n" for row in rows.tolist())
    # The batch as trained on (masks included), by the step it belongs to.
    seen = ids.tolist() if labels is None else list(zip(ids.tolist(), labels.tolist()))
    with open(os.path.join(where, f"batches{rank}.txt"), "a") as f:
        f.write(f"{self.state.global_step + 1} {hashlib.sha1(str(seen).encode()).hexdigest()}\n")
    return _training_step(self, model, inputs, *args, **kwargs)


PretrainTrainer.training_step = recording_training_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
