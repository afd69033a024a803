"""The commands and suites that drive the stages: the training scripts' command line (`cli`,
`entry`), `recommend`, the comparison (`compare`, with `search`, `stats`, `per_user` and
`compare_report`) and the paper suite (`paper`).

The stages (data, sampler, epoch, models, training, evaluation, checkpoints, reports) live one
level up and import nothing from here; a command imports the stages it drives.
"""
