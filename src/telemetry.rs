//! How logs are written (`tracing` to stderr): human-readable or JSON. The binary installs the
//! subscriber (its filter keeps the AWS SDK quiet in a terminal).

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
