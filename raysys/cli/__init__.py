"""`raysys <verb>`: the command line. main.py holds one function per verb and the parser;
flags.py turns config dataclasses into flags; runs.py holds the verbs that run a whole
experiment (demo, loop, experiment ...)."""
