//! The config file itself: not regular (a FIFO, `/dev/zero`, a directory), missing, too large or
//! not UTF-8 is refused; a symlink to a regular file is read.

use super::*;

#[test]
fn config_check_refuses_a_fifo_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("guardian.toml");
    run(Command::new("mkfifo").arg(&fifo));
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &fifo);
        assert_refused(
            &out,
            &["FIFO", "not a regular file", &fifo.display().to_string()],
        );
    }
}

#[test]
fn config_check_refuses_dev_zero_without_reading_it() {
    for command in [&["config", "check"][..], &["plan", "--config"][..]] {
        let out = run_with_config(command, Path::new("/dev/zero"));
        assert_refused(&out, &["/dev/zero", "character device"]);
    }
}

#[test]
fn config_check_refuses_a_directory_and_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], tmp.path()),
        &["a directory"],
    );
    assert_refused(
        &run_with_config(&["config", "check"], &tmp.path().join("absent.toml")),
        &["absent.toml"],
    );
}

#[test]
fn config_over_1_mib_is_refused_and_1_mib_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let at_limit = tmp.path().join("at-limit.toml");
    let limit = usize::try_from(MAX_CONFIG_BYTES).unwrap();
    let mut text = "#".repeat(limit - 1);
    text.push('\n');
    std::fs::write(&at_limit, &text).unwrap();
    let out = run_with_config(&["config", "check"], &at_limit);
    assert!(out.status.success(), "{}", stderr(&out));
    let over = tmp.path().join("over.toml");
    text.insert(0, '#');
    std::fs::write(&over, &text).unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], &over),
        &["larger than", "over.toml"],
    );
}

#[test]
fn non_utf8_config_is_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("latin1.toml");
    std::fs::write(&path, b"[daemon]\ndry_run = false\n# caf\xe9\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert_refused(
        &run_with_config(&["config", "check"], &path),
        &["line 3", "UTF-8"],
    );
}

#[test]
fn a_symlink_to_a_regular_config_file_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real.toml");
    std::fs::write(&real, "[daemon]\ndry_run = true\n").unwrap();
    let link = tmp.path().join("guardian.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run_with_config(&["config", "check"], &link);
    assert!(out.status.success(), "{}", stderr(&out));
}
