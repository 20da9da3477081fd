"""XDP programs (restricted C, compiled at load time by BCC).

Installed as the data package ``joyride.bpf`` so that ``importlib.resources`` finds the
sources both in a checkout and in an installed wheel.
"""
