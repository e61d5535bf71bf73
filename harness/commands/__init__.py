"""What the CLI's commands do beyond one library call: smoke test, doctor, predict and re-evaluate.

Each module here is the body of one or two `harness` commands; the libraries they use (train,
evaluate, data, models, distribute) know nothing of them.
"""
