"""What a person looks at: figures (:mod:`.figures`, matplotlib) and HTML pages (:mod:`.pages`,
Jinja2 templates in ``templates/``). Reads results through storage and the core; never imports torch."""
