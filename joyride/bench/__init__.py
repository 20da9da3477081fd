"""Side-by-side benchmarks of Joyride against the kernel on a veth test bed.

One module per job:

* ``stats``: medians, percentiles and Joyride/kernel ratios of repeated samples;
* ``procstat``: CPU time and peak memory from ``/proc`` (processes, softirq threads,
  the machine's ``/proc/stat``);
* ``tools``: command lines for, and parsers of, the real clients (sockperf, iperf3,
  wrk) and the project's own Python peers (``pyserver``, ``pysend``);
* ``servers``: the servers each comparison runs, on the kernel (an unsteered port) and
  on Joyride (a steered port: ``joyride run`` for service mode, ``joyride.embed`` for
  embedded mode), same binary and configuration otherwise;
* ``runner``: stages (one fresh bed per MTU, one Joyride mode at a time), repetitions
  alternating kernel and Joyride, CPU accounting per run;
* ``results``: the JSON document, the markdown table and the target checks;
* ``plot``: PNG plots (matplotlib, the ``bench`` extra);
* ``progress``: the progress line every long-running command shows;
* ``xskrate``: the raw AF_XDP packet rate (``scripts/bench_xsk.py``) for scale.
"""
