"""Commands for the tests of ``stoq.commands`` entry points."""
