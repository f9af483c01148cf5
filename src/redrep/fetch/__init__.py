"""Downloads: the resumable, verified HTTP transfer (:mod:`.http`) and the authors' published
representations (:mod:`.authors`). Imports storage and the core only."""
