"""The YAML configs shipped with coldstart (`coldstart.configs`): read through importlib.resources."""
