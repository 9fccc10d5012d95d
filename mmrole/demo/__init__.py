"""The demo (demo.sh): the whole pipeline on one CPU machine, with stand-ins for what it cannot have.

- tiny.py: tiny random Qwen-VL-Chat checkpoints, the real architecture and vocabulary (`python -m mmrole.tiny`)
- data.py: a small synthetic dataset in the raw MMRole-Data layout (`python -m mmrole.demo.data`)
- judge.py: templated judge reviews by a stated rule, standing in for GPT-4 (`python -m mmrole.demo.judge`)
- summary.py: the demo's closing summary (`python -m mmrole.demo.summary`)
"""
