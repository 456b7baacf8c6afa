"""Run a script under torchrun while every rank records its parameters and buffers after
each update, for tests/test_distributed.py to check that the replicas stay bit-identical:

    torchrun --nproc_per_node 2 tests/replicas.py SCRIPT OUT_DIR [script flags]

The check lives here rather than in the scripts: only a test needs it.
"""

import importlib
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    script, out_dir, *argv = sys.argv[1:]
    module = importlib.import_module(script)
    update, history = module.update, []

    def update_and_record(agent, *args, **kwargs):
        stats = update(agent, *args, **kwargs)
        history.append({name: t.detach().cpu().clone() for name, t in agent.state_dict().items()})
        return stats

    module.update = update_and_record  # train() looks `update` up in the module at each call
    status = module.main(argv)
    torch.save(history, Path(out_dir) / f"rank{os.environ['RANK']}.pt")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as the scripts do under torchrun: gloo's threads can abort a normal exit


if __name__ == "__main__":
    main()
