"""Op listing of traced graphs (for the op-set checks of exports and text ops)."""


def op_types(concrete_function) -> set[str]:
    graph_def = concrete_function.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:  # cond branches and other nested graphs
        ops |= {node.op for node in function.node_def}
    return ops
