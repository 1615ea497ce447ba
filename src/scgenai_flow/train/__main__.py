"""One process of a DDP training run started by `distributed.launch`: its arguments are a JSON
file written by `train_from_files`."""

import json
import sys
from pathlib import Path

from ..runtime import setup_logging
from . import TrainOutputs, train_from_files

setup_logging()
arguments = json.loads(Path(sys.argv[1]).read_text())
train_from_files(**{**arguments, "outputs": TrainOutputs(**arguments["outputs"])})
