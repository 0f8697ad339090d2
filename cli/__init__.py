"""Entry points, at the top of the import graph: the `mq` command line (`cli.main`) and
`mq dev` (`cli.dev`), which start the processes of `api`, `workers` and `scheduler`."""
