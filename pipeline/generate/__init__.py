"""Generation: `driver.py` fetches a registered model, builds the condition plan (`plan.py`) and has part writers
(`part_writer.py`, Ray Data actors) draw and write Parquet parts through the sink (`sink.py`: parts, manifest,
`_SUCCESS`)."""
