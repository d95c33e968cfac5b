"""The process model: nodes, their engines, and how they coordinate through the database.

One concept per module:
  membership    a node's row: register (taking over from a dead process), heartbeat, offline, listing
  lease         one master per database, held for the life of the master process
  commands      Ignite/Stop sent to nodes, acknowledged once; the cluster's target that late joiners follow
  engine_state  what each engine of each node should do (kept across restarts) and reports doing
  registry      the engines this installation can run, as lazy "module:function" specs
  context       EngineContext, what an engine's `run(ctx)` gets
  runner        one run of one engine, in a thread or in its own process; why it ended
  lifeline      child processes die with their node, however it dies; SIGTERM means stop and save
  supervisor    `plan()`: the pure decision what to start, stop, kill and restart; the loop applying it
  node          a node process: the pieces above wired together, with its heartbeat thread

This package sits just above the database layer: engines (collect, text, dataset, train...) import
`EngineContext` from it, and it names them only by strings, so it never imports them.
"""
