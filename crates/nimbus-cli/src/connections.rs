//! How many connections each listener of `nimbus up` and `nimbus server` may hold. Every open
//! connection costs a file descriptor, and a process out of them accepts nothing on any
//! listener, so at start the soft limit on open files is raised to the hard limit and the
//! gateway's and the API's caps are kept below it, with room left for everything else (stores,
//! logs, services' pipes and connections, outbound calls). Each listener stops accepting at its
//! cap, so a flood on one leaves the other serving.
use anyhow::bail;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The gateway's cap when none is given (or less, to fit the open-file limit).
const GATEWAY_DEFAULT: usize = 10_000;
/// The API's cap when none is given (or less, to fit the open-file limit).
const API_DEFAULT: usize = 256;
/// File descriptors kept for everything but client connections (at most half the limit).
const RESERVED: u64 = 1024;

/// The connection caps of the two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) gateway: usize,
    pub(crate) api: usize,
}

/// Raises the open-file limit as far as allowed and fits the caps under it (`None`: the default).
pub(crate) fn caps(gateway: Option<usize>, api: Option<usize>) -> anyhow::Result<Caps> {
    let limit = raise_open_files();
    let caps = fit(limit, gateway, api)?;
    tracing::info!(open_files = limit, gateway = caps.gateway, api = caps.api, "connection caps");
    Ok(caps)
}

/// Sets the soft limit on open files to the hard one; returns the soft limit in effect.
fn raise_open_files() -> u64 {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // No hard limit: the kernel still caps a process at fs.nr_open (1 Mi by default).
    let wanted = maximum.unwrap_or(1 << 20);
    if current.is_some_and(|c| c < wanted)
        && let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum })
    {
        tracing::warn!(error = %e, wanted, "cannot raise the limit on open files");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn fit(limit: u64, gateway: Option<usize>, api: Option<usize>) -> anyhow::Result<Caps> {
    let reserved = RESERVED.min(limit / 2);
    let budget = usize::try_from(limit - reserved).unwrap_or(usize::MAX);
    let api = api.unwrap_or(API_DEFAULT.min(budget / 8));
    let gateway = gateway.unwrap_or(GATEWAY_DEFAULT.min(budget.saturating_sub(api)));
    if api == 0 || gateway == 0 {
        bail!("--max-connections and --api-max-connections must be at least 1 (the open-file limit is {limit})");
    }
    if api.saturating_add(gateway) > budget {
        bail!(
            "--max-connections {gateway} and --api-max-connections {api} need more file descriptors than this process may open ({limit}, of which {reserved} are kept for stores, logs and services); lower them, or raise the limit (`ulimit -n`, systemd `LimitNOFILE=`)"
        );
    }
    Ok(Caps { gateway, api })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_open_file_limit() {
        assert_eq!(fit(1 << 20, None, None).unwrap(), Caps { gateway: 10_000, api: 256 });
        assert_eq!(fit(300, None, None).unwrap(), Caps { gateway: 132, api: 18 });
        assert_eq!(fit(128, None, None).unwrap(), Caps { gateway: 56, api: 8 });
        assert_eq!(fit(4096, Some(3000), Some(50)).unwrap(), Caps { gateway: 3000, api: 50 });
        let e = fit(4096, Some(3500), None).unwrap_err().to_string();
        assert!(e.contains("lower them, or raise the limit"), "{e}");
        assert!(fit(4096, Some(0), None).is_err());
    }
}
