"""The stages of a run, which sequence side effects through the tools: discover, mirror, scan, promote, replicate, sign; and the pipeline that runs them per tag."""
