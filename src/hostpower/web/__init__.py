"""The web console: static ES modules and CSS served by the engine under `/`."""
