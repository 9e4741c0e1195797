//! Headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (`/usr/bin/chromedriver`, or `MEETINGD_CHROMEDRIVER`), through `fantoccini` over plain HTTP.
//! A missing chromedriver fails the test unless `MEETINGD_SKIP_BROWSER=1` says to skip it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use meetingd_testkit::db::eventually;
use serde_json::json;

/// How long the browser test waits for anything the page should show.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// A browser session and the chromedriver serving it (its process group is killed when dropped,
/// Chromium with it).
pub struct Browser {
    pub client: Client,
    driver: std::process::Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started; no memory is involved.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MEETINGD_CHROMEDRIVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("chromedriver")).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin/chromedriver")).chain(on_path).find(|p| p.is_file())
}

/// Starts chromedriver and a headless Chromium; `None` only when `MEETINGD_SKIP_BROWSER=1`.
pub async fn start() -> Option<Browser> {
    if std::env::var("MEETINGD_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("browser test skipped: MEETINGD_SKIP_BROWSER=1");
        return None;
    }
    let path = chromedriver().unwrap_or_else(|| {
        panic!(
            "chromedriver not found (/usr/bin/chromedriver, PATH or MEETINGD_CHROMEDRIVER): install it with \
             `apt-get install -y chromium chromium-driver`, or set MEETINGD_SKIP_BROWSER=1 to skip the browser test"
        )
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("chromedriver to answer", Duration::from_secs(20), || async {
        http.get(format!("{url}/status")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1360,1280", "--force-device-scale-factor=1", "--lang=en-US", "--hide-scrollbars"]});
    if std::path::Path::new("/usr/bin/chromium").is_file() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let caps = json!({"browserName": "chrome", "goog:chromeOptions": options});
    let caps = caps.as_object().unwrap().clone();
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver started no Chromium session: {e}"));
    Some(Browser { client, driver })
}

impl Browser {
    /// The element matching `inner` in the shadow root of the element matching `host`, once
    /// it is there.
    pub async fn shadow(&self, host: &str, inner: &str) -> Element {
        let client = &self.client;
        eventually(&format!("{inner} in {host}"), PATIENCE, || async move {
            let root = client.find(Locator::Css(host)).await.ok()?.shadow_root().await.ok()?;
            root.find(Locator::Css(inner)).await.ok()
        })
        .await
    }

    /// Waits until `check` holds for the visible text of `inner` in `host`'s shadow root; that text.
    pub async fn text_until(&self, host: &str, inner: &str, check: impl Fn(&str) -> bool) -> String {
        let client = &self.client;
        let check = &check;
        eventually(&format!("the text of {inner} in {host}"), PATIENCE, || async move {
            let root = client.find(Locator::Css(host)).await.ok()?.shadow_root().await.ok()?;
            let text = root.find(Locator::Css(inner)).await.ok()?.text().await.ok()?;
            check(&text).then_some(text)
        })
        .await
    }

    /// Waits until `inner` in `host`'s shadow root has `attr` = `value`.
    pub async fn attr_until(&self, host: &str, inner: &str, attr: &str, value: &str) {
        let client = &self.client;
        eventually(&format!("{inner} in {host} with {attr}={value}"), PATIENCE, || async move {
            let root = client.find(Locator::Css(host)).await.ok()?.shadow_root().await.ok()?;
            let found = root.find(Locator::Css(inner)).await.ok()?.attr(attr).await.ok()??;
            (found == value).then_some(())
        })
        .await
    }
}
