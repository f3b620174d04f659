"""Running the pipeline: the papermill runner and the setup every notebook starts with."""
