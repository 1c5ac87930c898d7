use std::net::SocketAddr;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use wva_metrics_server::command::Command;
use wva_metrics_server::fatal::CommandError;
use wva_metrics_server::run;

/// mimalloc instead of the system allocator: a fetch cycle over 100,000
/// series makes millions of short-lived allocations, where glibc malloc
/// spent a third of the cycle and kept fragmented memory resident (see
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's run-time option setter (`mi_option_set` in mimalloc.h).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in `mi_option_e` (mimalloc 3, which
/// libmimalloc-sys builds; the same index in mimalloc 2). Its default is
/// 1,000 ms; the test below checks the index against that default.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Returns freed pages to the OS at once rather than after mimalloc's
/// delay (1 s, and ten times that for its arenas): at 100,000 pods a fetch
/// cycle frees tens of MB that the next cycle found still resident next to
/// its own, and the peak RSS was ~75 MiB higher (docs/benchmarks.md,
/// "Memory"). `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it atomically.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
    wva_metrics_server::certs::install_crypto_provider();
    let cli = match wva_metrics_server::command::parse_cli(std::env::args_os(), |k| {
        std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
    }) {
        Ok(cli) => cli,
        // `--help` and `--version` print and exit 0 as clap decides.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // Printed as clap formats it (suggestions, usage line).
            let _ = e.print();
            return ExitCode::from(CommandError::from(e).exit_code());
        }
    };
    wva_metrics_server::telemetry::init_tracing(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            wva_metrics_server::telemetry::eprint_line(format_args!(
                "error: cannot start the async runtime: {e}"
            ));
            let failure = CommandError::Runtime(e.into());
            return ExitCode::from(failure.exit_code());
        }
    };
    let result = runtime.block_on(run_command(cli.command));
    // Tasks still blocked (a query thread, a blocking read) are not waited
    // for: the process is exiting.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Said once: as a JSON log line for log collectors, else as a
            // plain line for the person at the terminal (never a panic
            // when stderr is gone).
            let message = wva_metrics_server::fatal::one_line(&e);
            if cli.log_json {
                tracing::error!(error = %message, "fatal");
            } else {
                wva_metrics_server::telemetry::eprint_line(format_args!("error: {message}"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one command; its failure says by its class how the process exits.
async fn run_command(command: Command) -> Result<(), CommandError> {
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        // Handlers installed now, before anything else starts.
        let signal = run::shutdown_signal();
        tokio::spawn(async move {
            signal.await;
            shutdown.cancel();
        });
    }
    match command {
        Command::Serve(args) => {
            // Flags and files first (an unsafe KEDA port, Lease timings,
            // TLS files, the backend's URL): a mistake in them stops `serve`
            // with exit code 2 before any task starts.
            run::check_before_start(&args)?;
            let mut tasks = Vec::new();
            let certificate =
                run::ServingCert::from_args(args.tls.files()?, &shutdown, &mut tasks)?;
            let components = run::components_from_args(&args, &shutdown, &mut tasks).await?;
            let tls = certificate.config(wva_metrics_server::server::tls::ClientAuth::Optional)?;
            let addr = SocketAddr::new(args.listen.bind_address, args.listen.secure_port);
            let listen = run::Listen {
                addr,
                tls,
                stack: args.limits.stack(),
                limits: args.limits.server_limits(),
                groups: wva_metrics_server::cli::ApiGroupName::served(&args.listen.api_groups),
            };
            let drain_timeout = listen.limits.drain_timeout;
            let shutdown_token = shutdown.clone();
            let mut server = run::start(components, listen, shutdown.clone(), tasks).await?;
            if let Some(port) = args.keda.keda_port {
                let task = run::start_keda(&args, port, &certificate, &server, shutdown).await?;
                server.tasks.push(task);
            }
            server.join_within(&shutdown_token, drain_timeout).await;
            Ok(())
        }
        #[cfg(feature = "emulator")]
        Command::Demo(args) => Ok(wva_metrics_server::demo::run(args, shutdown).await?),
        #[cfg(feature = "emulator")]
        Command::Emulate(args) => Ok(wva_metrics_server::emulator::run_cli(args, shutdown).await?),
        #[cfg(not(feature = "emulator"))]
        Command::Demo(_) => Err(wva_metrics_server::command::not_in_this_build("demo")),
        #[cfg(not(feature = "emulator"))]
        Command::Emulate(_) => Err(wva_metrics_server::command::not_in_this_build("emulate")),
        Command::Certs(args) => {
            let files = wva_metrics_server::certs::generate_with(
                &args.namespace,
                &args.service,
                &args.out,
                args.force,
            )
            .map_err(anyhow::Error::from)?;
            wva_metrics_server::say!(
                "wrote {}, {}, {}, {} and {}",
                files.ca_cert.display(),
                files.ca_key.display(),
                files.tls_cert.display(),
                files.tls_key.display(),
                files.apiservice.display()
            );
            wva_metrics_server::say!(
                "next: kubectl -n {ns} create secret generic {svc}-tls --from-file={} --from-file={} --from-file={} && scripts/install-apiservice {}",
                files.tls_cert.display(),
                files.tls_key.display(),
                files.ca_cert.display(),
                files.apiservice.display(),
                ns = args.namespace,
                svc = args.service
            );
            if args.keda_client {
                let keda = wva_metrics_server::certs::generate_keda_client(&args.out)
                    .map_err(anyhow::Error::from)?;
                wva_metrics_server::say!(
                    "wrote {}, {} and {} for the KEDA port (serve --keda-client-ca-file {}; KEDA's tlsClientCert and tlsClientKey)",
                    keda.ca_cert.display(),
                    keda.client_cert.display(),
                    keda.client_key.display(),
                    keda.ca_cert.display(),
                );
            }
            Ok(())
        }
        Command::Simulate(args) => Ok(wva_metrics_server::simulate::run_cli(*args).await?),
        Command::Crd => {
            let crd =
                wva_metrics_server::inventory::crd::crd_yaml().map_err(anyhow::Error::from)?;
            wva_metrics_server::say!("{}", crd.trim_end());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads an integer option.
        let before = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                before, 1000,
                "mimalloc's default purge delay is 1,000 ms: wrong option index"
            );
        }
        return_freed_memory_promptly();
        // SAFETY: as above.
        let after = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(after, 0);
        }
    }
}
