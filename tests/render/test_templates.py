"""Templates: the bundled ones are valid MJML; errors name file and line; users can override any."""

import re
from pathlib import Path

import jinja2
import pytest

from digest.errors import TemplateError
from digest.render import mjml_check
from digest.render.copies import make_renderer
from digest.render.email import (
    HTML_TEMPLATE,
    bundled_templates_dir,
    check_slots,
    compile_mjml,
    make_environment,
)
from tests.render import samples

BUNDLED = bundled_templates_dir()


def test_bundled_templates_use_only_known_mjml(env: jinja2.Environment) -> None:
    tree = mjml_check.template_tree(env, HTML_TEMPLATE)
    assert set(tree) == {
        "digest.mjml.j2",
        "partials/header.mjml.j2",
        "partials/topic.mjml.j2",
        "partials/story.mjml.j2",
        "partials/footer.mjml.j2",
    }
    assert [str(p) for p in mjml_check.check_templates(env, HTML_TEMPLATE)] == []


def test_rendered_mjml_uses_only_known_mjml(env: jinja2.Environment) -> None:
    # Also after Jinja ran, with every branch taken (summaries, several sources, one topic or many).
    for sample in (samples.edition(12), samples.hostile_edition()):
        rendered = samples.render_sample(env, sample)
        assert [str(p) for p in mjml_check.check_mjml(rendered.mjml, template="rendered")] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<mjml><mj-body><mj-colum></mj-colum></mj-body></mjml>", "t:1: <mj-colum> is not an MJML component"),
        (
            '<mjml><mj-body>\n<mj-section paddng="0"><mj-column/></mj-section></mj-body></mjml>',
            "t:2: <mj-section>: unknown attribute 'paddng'",
        ),
        (
            "<mjml><mj-body><mj-section><mj-column>\n<mj-image src='a.png'/></mj-column></mj-section>"
            "</mj-body></mjml>",
            "t:2: <mj-image> needs an alt attribute",
        ),
        (
            "<mjml><mj-body><mj-text>x</mj-text></mj-body></mjml>",
            "t:1: <mj-text> cannot be inside <mj-body>",
        ),
        (
            "<mjml><mj-body><mj-section><mj-column><mj-text>\n<p>open</mj-text></mj-column></mj-section>"
            "</mj-body></mjml>",
            "t:2: <p> (line 2) is not closed before </mj-text>",
        ),
        (
            "<mjml><mj-body><mj-section>\n</mj-body></mjml>",
            "t:2: <mj-section> (line 1) is not closed before </mj-body>",
        ),
        ("<mjml></mj-body></mjml>", "t:1: </mj-body> closes nothing open"),
        (
            "<mjml><mj-body><mj-section><mj-column><mj-text><mj-button>x</mj-button></mj-text>"
            "</mj-column></mj-section></mj-body></mjml>",
            "t:1: <mj-button> inside <mj-text>, which holds HTML only",
        ),
        (
            '<mjml><mj-head><mj-attributes><mj-text colour="red"/></mj-attributes></mj-head></mjml>',
            "t:1: <mj-text>: unknown attribute 'colour'",
        ),
        ("<mjml><mj-body><div>x</div></mj-body></mjml>", "t:1: <div> is not MJML"),
    ],
)
def test_checker_catches_what_mjml_python_ignores(source: str, expected: str) -> None:
    problems = [str(p) for p in mjml_check.check_mjml(source, template="t")]
    assert any(p.startswith(expected) for p in problems), problems


def test_checker_accepts_css_with_angle_brackets_and_jinja() -> None:
    source = (
        "<mjml>\n<mj-head><mj-style>a > b { color: red; }</mj-style></mj-head>\n"
        '<mj-body>{% for s in x %}<mj-section css-class="{{ s }}"><mj-column>'
        "<mj-text>{{ s.title }}<br></mj-text></mj-column></mj-section>{% endfor %}</mj-body>\n</mjml>"
    )
    assert mjml_check.check_mjml(mjml_check.strip_jinja(source), template="t") == []


def _user_env(tmp_path: Path, files: dict[str, str]) -> jinja2.Environment:
    for name, text in files.items():
        path = tmp_path / "mine" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return make_environment(tmp_path / "mine")


def _copy_with(name: str, old: str, new: str) -> str:
    text = (BUNDLED / name).read_text()
    assert old in text
    return text.replace(old, new, 1)


def test_override_one_partial_and_fall_back_for_the_rest(tmp_path: Path) -> None:
    footer = _copy_with("partials/footer.mjml.j2", "{{ newsletter.postal_address }}", "Sent from the moon")
    env = _user_env(tmp_path, {"partials/footer.mjml.j2": footer})
    html, text = samples.fill(samples.render_sample(env))
    assert "Sent from the moon" in html
    assert "1 Example Street" not in html
    assert "1 Example Street" in text  # the text template still comes from the bundle
    assert "EV industry" in html  # so do the layout and the other partials


def test_templates_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"DIGEST_TEMPLATES_DIR: '.*nowhere' is not a folder"):
        make_environment(tmp_path / "nowhere")


def test_jinja_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    story = _copy_with("partials/story.mjml.j2", "{%- if story.summary %}", "{%- if story.summary %%}")
    env = _user_env(tmp_path, {"partials/story.mjml.j2": story})
    with pytest.raises(TemplateError) as caught:
        samples.render_sample(env)
    assert re.match(r"template .*mine/partials/story\.mjml\.j2:5: ", str(caught.value)), str(caught.value)


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    topic = _copy_with("partials/topic.mjml.j2", "{{ section.name }}</h2>", "{{ section.nmae }}</h2>")
    env = _user_env(tmp_path, {"partials/topic.mjml.j2": topic})
    with pytest.raises(TemplateError) as caught:
        samples.render_sample(env)
    message = str(caught.value)
    assert re.match(r"template .*mine/partials/topic\.mjml\.j2:4: .*nmae", message), message


def test_undefined_variable_in_text_template(tmp_path: Path) -> None:
    text = _copy_with("digest.txt.j2", "{{ newsletter.postal_address }}", "{{ postal }}")
    env = _user_env(tmp_path, {"digest.txt.j2": text})
    with pytest.raises(TemplateError, match=r"mine/digest\.txt\.j2:\d+: 'postal' is undefined"):
        samples.render_sample(env)


def test_missing_include_is_named(tmp_path: Path) -> None:
    layout = _copy_with("digest.mjml.j2", "partials/footer.mjml.j2", "partials/fooder.mjml.j2")
    env = _user_env(tmp_path, {"digest.mjml.j2": layout})
    with pytest.raises(TemplateError, match=r"template partials/fooder\.mjml\.j2 not found"):
        samples.render_sample(env)


def test_mjml_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    # An unclosed tag in a partial: mjml-python fails on the whole document; we point at the partial.
    footer = _copy_with("partials/footer.mjml.j2", "      </mj-column>\n", "")
    env = _user_env(tmp_path, {"partials/footer.mjml.j2": footer})
    with pytest.raises(TemplateError) as caught:
        samples.render_sample(env)
    message = str(caught.value)
    assert re.match(r"template .*mine/partials/footer\.mjml\.j2:\d+: .*MJML does not compile", message), (
        message
    )


def test_mjml_failure_without_a_lint_finding_points_at_the_rendered_line(
    env: jinja2.Environment,
) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_mjml(env, "<mjml>\n<mj-bodyy>\n</mj-bodyy></mjml>")
    assert "MJML does not compile" in str(caught.value)
    assert "rendered MJML line 2: '<mj-bodyy>'" in str(caught.value)


def test_template_that_drops_the_unsubscribe_link_is_refused(tmp_path: Path) -> None:
    text = _copy_with("digest.txt.j2", "Unsubscribe: {{ slot.unsubscribe_url }}", "")
    env = _user_env(tmp_path, {"digest.txt.j2": text})
    with pytest.raises(TemplateError, match=r"text template does not use slot\.unsubscribe_url"):
        check_slots(samples.render_sample(env))


def test_type_error_in_template_code_names_file_and_line(tmp_path: Path) -> None:
    header = _copy_with(
        "partials/header.mjml.j2", "{{ newsletter.title }}</h1>", '{{ story_count + "!" }}</h1>'
    )
    env = _user_env(tmp_path, {"partials/header.mjml.j2": header})
    with pytest.raises(TemplateError, match=r"mine/partials/header\.mjml\.j2:7: TypeError"):
        samples.render_sample(env)


def test_user_templates_with_unknown_mjml_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from digest.config import load_settings
    from digest.newsletter import Newsletter, TopicConfig

    footer = _copy_with("partials/footer.mjml.j2", 'padding="20px 0 32px"', 'paddin="20px 0 32px"')
    _user_env(tmp_path, {"partials/footer.mjml.j2": footer})
    settings = load_settings(templates_dir=tmp_path / "mine", var_dir=tmp_path / "var")
    newsletter = Newsletter(newsletter=samples.NEWSLETTER, topics=[TopicConfig(name="EV industry")])
    with caplog.at_level("WARNING", logger="digest.render.copies"):
        make_renderer(settings, newsletter)
    assert any(
        re.search(
            r"template check: .*mine/partials/footer\.mjml\.j2:2: <mj-section>: unknown attribute 'paddin'", m
        )
        for m in caplog.messages
    ), caplog.messages


def test_empty_copy_renders_for_preview(env: jinja2.Environment) -> None:
    from digest.compose import Edition

    html, text = samples.fill(samples.render_sample(env, Edition(samples.DAY, "EV Brief", ())))
    assert "No new stories today." in text
    assert "No new stories today." in html
