"""`cllm`, the pipeline's command line: one module per command group (`add` registers its
parser, `run` carries it out), each calling library code. An entry point: it may import any
package."""
