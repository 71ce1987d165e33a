"""Training the world models: plans as data next to the weights (weights/NAME/plans.json, read by
plans.py), one loop for both (loop.py), each model's data and losses (clip.py, llava.py, binding.py, data.py), exact resume (resume.py), the held-out
protocol (metrics.py), model cards (card.py) and the commands (commands.py: `neuronatlas zoo
train|eval NAME`). The top layer of the package: nothing outside it and the CLI imports it;
inference needs only worldmodels/arch/."""

from .commands import eval_cmd, evaluate, train, train_cmd, zoo_app

__all__ = ["eval_cmd", "evaluate", "train", "train_cmd", "zoo_app"]
