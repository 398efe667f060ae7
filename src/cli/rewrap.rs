//! `byok-broker rewrap`: starts a rewrap job (or follows one) on a running broker and shows
//! progress: a bar with done/total, rate and ETA on a terminal, a line per second otherwise.
//! Exits non-zero when the job fails or is cancelled.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{Value, json};

use super::http_client::HttpClient;

pub enum Target {
    ByokKey(String),
    Kek(String),
    Job(String),
}

pub async fn run(client: &HttpClient, target: Target) -> Result<(), String> {
    let job_id = match target {
        Target::Job(id) => id,
        Target::ByokKey(id) => start(client, json!({"byok_key_id": id})).await?,
        Target::Kek(id) => start(client, json!({"kek_id": id})).await?,
    };
    let terminal = std::io::stderr().is_terminal();
    loop {
        let (status, job) = client
            .call("GET", &format!("/admin/v1/rewrap-jobs/{job_id}"), None)
            .await?;
        if status != 200 {
            return Err(api_error(status, &job));
        }
        let line = progress_line(&job);
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        match job["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_secs(1)).await,
            Some("completed") => {
                if terminal {
                    eprintln!();
                }
                println!("{job}");
                return Ok(());
            }
            other => {
                if terminal {
                    eprintln!();
                }
                println!("{job}");
                return Err(format!(
                    "rewrap job {job_id} ended {}: {}",
                    other.unwrap_or("unknown"),
                    job["error"].as_str().unwrap_or("")
                ));
            }
        }
    }
}

async fn start(client: &HttpClient, source: Value) -> Result<String, String> {
    let (status, job) = client
        .call(
            "POST",
            "/admin/v1/rewrap-jobs",
            Some(&json!({"source": source})),
        )
        .await?;
    if status != 202 {
        return Err(api_error(status, &job));
    }
    let id = job["id"]
        .as_str()
        .ok_or("the broker answered without a job id")?
        .to_owned();
    eprintln!("started rewrap job {id} ({} objects)", job["total"]);
    Ok(id)
}

fn api_error(status: u16, body: &Value) -> String {
    format!(
        "broker answered {status} {}: {}",
        body["code"].as_str().unwrap_or("?"),
        body["message"].as_str().unwrap_or("")
    )
}

/// `[#########-----------] 450/1000  45%  120.3 obj/s  ETA 5s  failed 0`
pub fn progress_line(job: &Value) -> String {
    let total = job["total"].as_u64().unwrap_or(0);
    let handled = ["done", "skipped", "failed"]
        .iter()
        .map(|k| job[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let rate = job["objects_per_second"].as_f64().unwrap_or(0.0);
    let fraction = if total == 0 {
        1.0
    } else {
        (handled as f64 / total as f64).min(1.0)
    };
    let width = 30;
    let filled = (fraction * width as f64).round() as usize;
    let eta = if rate > 0.0 {
        format!("{:.0}s", total.saturating_sub(handled) as f64 / rate)
    } else {
        "?".into()
    };
    format!(
        "[{}{}] {handled}/{total} {:>3.0}%  {rate:.1} obj/s  ETA {eta}  failed {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        job["failed"].as_u64().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_counts_rate_and_eta() {
        let line = progress_line(
            &json!({"total": 1000, "done": 400, "skipped": 50, "failed": 0, "objects_per_second": 100.0}),
        );
        assert!(
            line.contains("450/1000")
                && line.contains("45%")
                && line.contains("100.0 obj/s")
                && line.contains("ETA 6s"),
            "{line}"
        );
        assert!(progress_line(&json!({"total": 0})).contains("100%"));
    }
}
