from tagrate_common import settings_doc


def test_readme_lists_every_environment_variable_with_its_default():
    assert settings_doc.readme_section() == settings_doc.render(), (
        "README.md's configuration tables are out of date: run `python -m tagrate_common.settings_doc --write`"
    )


def test_readme_shows_the_two_commands():
    text = settings_doc.README.read_text()
    assert "make run" in text and "make test" in text
