//! Property tests of the hooks file an artifact carries: any text is read without a
//! panic, every error it reports is located, and a file written from hooks reads back
//! as those hooks.

use super::*;
use proptest::prelude::*;

/// A `run` hook or (for validate) an `http` check, with its YAML text.
fn hook_for(step: Step) -> BoxedStrategy<(Hook, String)> {
    // A command of only blanks is refused (a hook that runs nothing is a mistake), so
    // every generated one holds at least one visible character.
    let run = ("[ -~]{0,20}[!-~][ -~]{0,19}", prop::option::of(1u64..100_000)).prop_map(|(command, timeout)| {
        // A JSON string is a YAML double-quoted scalar: the command is read back as is.
        let quoted = serde_json::to_string(&command).unwrap_or_default();
        let text = match timeout {
            Some(s) => format!("{{ run: {quoted}, timeout: {s}s }}"),
            None => format!("{{ run: {quoted} }}"),
        };
        let timeout = timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        (Hook::Run { command, timeout }, text)
    });
    if step != Step::Validate {
        return run.boxed();
    }
    let http = ("https?://[a-z0-9.]{1,12}(:[0-9]{1,4})?/[a-z/]{0,10}", 100u16..600, 1u64..3600).prop_map(
        |(url, expect_status, within)| {
            let text = format!("{{ http: \"{url}\", expect_status: {expect_status}, within: {within}s }}");
            (Hook::Http { url, expect_status, within: Duration::from_secs(within) }, text)
        },
    );
    prop_oneof![run, http].boxed()
}

fn hooks_file() -> impl Strategy<Value = (Hooks, String)> {
    let steps = Step::ALL.map(|step| prop::option::of(hook_for(step)));
    steps.prop_map(|hooks| {
        let mut file = Hooks::default();
        let mut text = String::new();
        for (step, hook) in Step::ALL.into_iter().zip(hooks) {
            let Some((hook, yaml)) = hook else { continue };
            text.push_str(&format!("{step}: {yaml}\n"));
            match step {
                Step::Stop => file.stop = Some(hook),
                Step::BeforeInstall => file.before_install = Some(hook),
                Step::AfterInstall => file.after_install = Some(hook),
                Step::Start => file.start = Some(hook),
                Step::Validate => file.validate = Some(hook),
            }
        }
        (file, text)
    })
}

/// Text from YAML's punctuation, the file's words and a little of everything else.
fn yaml_like() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "start",
        "stop",
        "validate",
        "before_install",
        "after_install",
        "run",
        "http",
        "timeout",
        "within",
        "expect_status",
        ": ",
        ":",
        "{",
        "}",
        "[",
        "]",
        ",",
        "-",
        " ",
        "  ",
        "\n",
        "\t",
        "\"",
        "'",
        "&a",
        "*a",
        "!!str",
        "#",
        "|",
        ">",
        "30s",
        "0s",
        "99999999999999999999d",
        "http://x/",
        "600",
        "-1",
        "~",
        "null",
        "\u{feff}",
        "\u{0}",
        "é",
        "? ",
        "---",
        "...",
        "%YAML 1.2",
    ]);
    prop::collection::vec(word, 0..60).prop_map(|words| words.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_hooks_file_reads_back_as_the_hooks_it_was_written_from((hooks, text) in hooks_file()) {
        let parsed = Hooks::parse(HOOKS_FILE, &text);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&hooks), "{}\n{:?}", text, parsed.as_ref().err().map(ToString::to_string));
    }

    #[test]
    fn any_text_is_read_without_a_panic_and_every_error_is_located(text in yaml_like()) {
        if let Err(errors) = Hooks::parse(HOOKS_FILE, &text) {
            let errors = errors.to_string();
            prop_assert!(!errors.trim().is_empty());
            for line in errors.lines().filter(|l| !l.starts_with(' ')) {
                let place = line.strip_prefix("rollwave-hooks.yaml:").and_then(|rest| rest.split(": ").next());
                let located = place.is_some_and(|p| {
                    let mut parts = p.split(':');
                    parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
                        && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
                });
                prop_assert!(located, "not located: {line:?} in\n{errors}\nfor {text:?}");
            }
        }
    }
}
