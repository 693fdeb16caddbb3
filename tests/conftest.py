pytest_plugins = ["medcycle.testing.plugin"]
