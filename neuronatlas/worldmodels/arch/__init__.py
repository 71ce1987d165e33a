"""The world models' architectures, what inference needs: configs and builders (clip.py, llava.py),
the word-level tokenizer, encoders and greedy answers, and checkpoint files (checkpoint.py).

A low layer (it needs only `neuronatlas.data.world`, `errors` and transformers), so the zoo, the
backends and the method packages use it; it never imports training (worldmodels/train/).
"""
