//! Any header or skill request template an operator writes: parsing and rendering
//! never panic, and a template that parses, written back with its placeholders, parses
//! to the same template.
#![no_main]

use std::collections::BTreeMap;

use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for (template, skill) in [
        (HeaderTemplate::parse(text), false),
        (HeaderTemplate::parse_skill(text), true),
    ] {
        let Ok(template) = template else {
            continue;
        };
        // Every secret it names, set to a marker that spells its placeholder again.
        let secrets: BTreeMap<String, Secret> = template
            .secret_names()
            .map(|name| (name.to_owned(), Secret::new(format!("{{{{secrets.{name}}}}}"))))
            .collect();
        let written = template
            .render_with(&secrets, |name| format!("{{{{args.{name}}}}}"))
            .expect("every secret it names is set");
        let again = if skill {
            HeaderTemplate::parse_skill(&written)
        } else {
            HeaderTemplate::parse(&written)
        };
        assert_eq!(again.as_ref(), Ok(&template), "{text:?} -> {written:?}");
        // Without its secrets it says which one is missing.
        let first = template.secret_names().next().map(str::to_owned);
        if let Some(first) = first {
            let missing = template.render(&BTreeMap::new()).unwrap_err();
            assert_eq!(missing.name, first);
        }
    }
});
