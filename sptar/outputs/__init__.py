"""Every stage output's one reader and one writer, with its file names (and nowhere else).

Stages meet through these files: a stage imports the readers of what it reads and the writer of
what it writes, never another stage module.
"""
