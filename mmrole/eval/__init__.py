"""MMRole-Eval: the agent answers the test sets, a judge reviews every answer on eight metrics, and the score ratios
become the per-file CSVs and the paper's Table 5.

- files.py: test, answers and reviews files (listed, loaded, validated; their images checked)
- run.py: a run over those files: journals beside the outputs (resume), run settings, requests through a backend,
  the per-file summary
- answer.py: an agent's answers (inference.py)
- review.py: the judge's eight-metric reviews (eval/RM_review.py, eval/GPT_review.py)
- results.py: reviews -> the published per-file CSVs (eval/RM_result.py)
- report.py + charts.py: Table 5, radar chart, dimension bars (eval/report.py)
- agreement.py: two reviewers compared (eval/RM_agreement.py)
- rm_data.py: judge reviews -> reward-model training samples (eval/build_RM_data.py)
- cli.py: the flags of inference and review, and the run around their work
"""
