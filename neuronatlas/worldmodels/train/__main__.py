"""python -m neuronatlas.worldmodels.train train|eval NAME"""

from .commands import zoo_app

zoo_app()
