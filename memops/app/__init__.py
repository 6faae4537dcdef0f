"""The memops application: the `memops` command line (train, eval, plot), the recipes that train each
task's model, checkpoints, progress and metrics, pictures, the NTM tasks and the text data loaders.

It is built on the op library and the models (`memops`, `memops.nn`) and nothing there imports it:
`import memops` does not load this package. `memops.tasks` and `memops.data` are its subpackages
`memops.app.tasks` and `memops.app.data` under their old names.
"""
