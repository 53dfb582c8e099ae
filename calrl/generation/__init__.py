"""Generation: prompts and their templates, batched generation of answers, a checkpoint's predictions, sharding.

The trainers (PPO's rollouts and its end-of-epoch eval) and ``calrl eval --model`` generate through here; the
answers become :class:`calrl.data.records.PredictionRecord` rows that :mod:`calrl.eval` scores.
"""
