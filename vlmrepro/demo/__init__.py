"""The embedded demo's own code, kept beside the library rather than inside it (as open_clip keeps its training
code): ``world`` builds the synthetic world (classes, images, corpora, mini ImageWikiQA), ``train`` trains the
world's tiny CLIP and LLaVA on a CPU, and ``tiny`` builds tiny random-weight models of every family for the demo
and the tests. Only the demo's rules (build_world, train_world_model, build_tiny_model), the tests and the
benchmarks import it; a paper run never does."""
