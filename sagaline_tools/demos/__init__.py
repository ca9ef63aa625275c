"""Sample workloads for a running sagaline: pure scenario builders and console-free runners.

The CLI (`sagaline demo ...`) renders their progress; tests drive them directly.
"""
