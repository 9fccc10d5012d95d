"""MMRole-Eval."""
