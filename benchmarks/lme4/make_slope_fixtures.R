# Reference fits of lme4, lmerTest and pbkrtest for models with random slopes
# (tests/test_lmm_lme4.py and tests/test_inference.py). As in make_fixtures.R, the data and the
# reference values are committed as small CSV files, so the tests run without R. Regenerate (R
# with lme4, lmerTest and pbkrtest) from the repository root:
#
#     Rscript benchmarks/lme4/make_slope_fixtures.R
#
# Fixtures written to tests/fixtures/lme4/, for each data set NAME and model MODEL:
#   NAME.csv               the data
#   NAME_MODEL_lme4.csv    one value a row (kind, name, value):
#     fixef      the fixed effects
#     vcov       lme4's vcov(fit), named "row|column"
#     varcorr    as.data.frame(VarCorr(fit)): "group|var1|var2" -> variance or covariance, with
#                the group's ".1", ".2" suffixes of uncorrelated terms removed
#     sdcor      the same rows as standard deviations and correlations
#     criterion  REMLcrit(fit)
#     singular   isSingular(fit) (1 or 0)
#     satterthwaite, kenward_roger
#                lmerTest's contest(fit, L, joint = FALSE) for each contrast CONTRAST, named
#                "CONTRAST|statistic" (estimate, se, df, t, p, lower, upper); the contrasts are
#                each fixed effect and, on the grids, diversity - volume
#     version    R, lme4, lmerTest, pbkrtest

suppressMessages({library(lme4); library(lmerTest); library(pbkrtest)})
out <- file.path("tests", "fixtures", "lme4")
dir.create(out, recursive = TRUE, showWarnings = FALSE)

# lme4's default optimiser stops at about 1e-6 relative in small variances; the fixtures are
# references, so BOBYQA runs to a much smaller trust radius.
control <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
num <- function(x) format(x, digits = 17)

contrast_rows <- function(fit, contrasts, method) {
  rows <- list()
  for (name in names(contrasts)) {
    res <- contest(fit, contrasts[[name]], joint = FALSE, ddf = method, confint = TRUE)
    values <- c(estimate = res$Estimate, se = res[["Std. Error"]], df = res$df, t = res[["t value"]],
                p = res[["Pr(>|t|)"]], lower = res$lower, upper = res$upper)
    rows[[name]] <- data.frame(kind = if (method == "Satterthwaite") "satterthwaite" else "kenward_roger",
                               name = paste(name, names(values), sep = "|"), value = num(values))
  }
  do.call(rbind, rows)
}

write_fit <- function(name, formula, data, contrasts, kenward_roger) {
  fit <- lmer(formula, data = data, REML = TRUE, control = control)
  clean <- function(x) sub("(Intercept)", "Intercept", x, fixed = TRUE)
  terms <- clean(names(fixef(fit)))
  V <- as.matrix(vcov(fit))
  vc <- as.data.frame(VarCorr(fit))
  vc$var2[is.na(vc$var2)] <- ""
  vc$var1[is.na(vc$var1)] <- ""
  vc_names <- paste(sub("\\.[0-9]+$", "", vc$grp), clean(vc$var1), clean(vc$var2), sep = "|")
  table <- rbind(
    data.frame(kind = "fixef", name = terms, value = num(fixef(fit))),
    data.frame(kind = "vcov", name = as.vector(outer(terms, terms, paste, sep = "|")), value = num(as.vector(V))),
    data.frame(kind = "varcorr", name = vc_names, value = num(vc$vcov)),
    data.frame(kind = "sdcor", name = vc_names, value = num(vc$sdcor)),
    data.frame(kind = "criterion", name = "REML", value = num(REMLcrit(fit))),
    data.frame(kind = "singular", name = "isSingular", value = as.character(as.integer(isSingular(fit)))),
    contrast_rows(fit, contrasts, "Satterthwaite"),
    if (kenward_roger) contrast_rows(fit, contrasts, "Kenward-Roger"),
    data.frame(kind = "version", name = c("R", "lme4", "lmerTest", "pbkrtest"),
               value = c(paste(R.version$major, R.version$minor, sep = "."),
                         as.character(packageVersion("lme4")), as.character(packageVersion("lmerTest")),
                         as.character(packageVersion("pbkrtest")))))
  write.csv(table, file.path(out, paste0(name, "_lme4.csv")), row.names = FALSE)
}

unit_contrasts <- function(p, names) {
  contrasts <- lapply(seq_len(p), function(i) { L <- rep(0, p); L[i] <- 1; L })
  names(contrasts) <- names
  contrasts
}

# (a) lme4's sleepstudy: reaction times of 18 subjects over 10 days of sleep deprivation.
data(sleepstudy, package = "lme4")
write.csv(sleepstudy, file.path(out, "sleepstudy.csv"), row.names = FALSE)
sleep_contrasts <- unit_contrasts(2, c("Intercept", "Days"))
write_fit("sleepstudy_correlated", Reaction ~ Days + (Days | Subject), sleepstudy, sleep_contrasts, TRUE)
write_fit("sleepstudy_uncorrelated", Reaction ~ Days + (Days || Subject), sleepstudy, sleep_contrasts, TRUE)

# (b) A transfer grid whose targets have their own slopes of diversity and volume: 5 targets,
# 8 languages each, 30 mixes each evaluated on every target language (one seed). Diversity and
# volume are log2 of the tasks and examples in the mix, centred over mixes.
set.seed(20250)
n_mixes <- 30; n_targets <- 5; n_languages <- 8
tasks <- 2^sample(0:4, n_mixes, replace = TRUE)
examples <- 1000 * 2^sample(0:4, n_mixes, replace = TRUE)
div <- log2(tasks) - mean(log2(tasks))
vol <- log2(examples) - mean(log2(examples))
slope_cov <- matrix(c(16, 2, -1, 2, 2.25, -0.9, -1, -0.9, 1), 3)  # intercept, div, vol
target_effects <- t(chol(slope_cov)) %*% matrix(rnorm(3 * n_targets), 3)
u_language <- matrix(rnorm(n_targets * n_languages, 0, 2), n_targets)
u_mix <- rnorm(n_mixes, 0, 1)
grid <- expand.grid(language = sprintf("l%02d", seq_len(n_languages)), target = seq_len(n_targets),
                    mix = seq_len(n_mixes))
grid$target_task <- sprintf("t%d", grid$target)
grid$div <- div[grid$mix]
grid$vol <- vol[grid$mix]
grid$y <- 50 + 1.0 * grid$div + 0.5 * grid$vol - 0.2 * grid$div * grid$vol +
  target_effects[1, grid$target] + target_effects[2, grid$target] * grid$div +
  target_effects[3, grid$target] * grid$vol + u_language[cbind(grid$target, as.integer(grid$language))] +
  u_mix[grid$mix] + rnorm(nrow(grid), 0, 2)
grid$mix <- sprintf("m%02d", grid$mix)
grid <- grid[, c("y", "div", "vol", "target_task", "language", "mix")]
write.csv(grid, file.path(out, "slope_grid.csv"), row.names = FALSE)
grid_contrasts <- c(unit_contrasts(4, c("Intercept", "div", "vol", "div:vol")),
                    list("div - vol" = c(0, 1, -1, 0)))
write_fit("slope_grid_correlated",
          y ~ div * vol + (1 + div + vol | target_task) + (1 | target_task:language) + (1 | mix),
          grid, grid_contrasts, TRUE)
write_fit("slope_grid_uncorrelated",
          y ~ div * vol + (1 + div + vol || target_task) + (1 | target_task:language) + (1 | mix),
          grid, grid_contrasts, TRUE)

# (c) Unbalanced versions, where Kenward-Roger's adjustment of the covariance is not zero: a
# sixth of sleepstudy's rows and 40% of the grid's rows left out at random.
set.seed(20251)
sleep_unbalanced <- sleepstudy[sort(sample(nrow(sleepstudy), 150)), ]
write.csv(sleep_unbalanced, file.path(out, "sleepstudy_unbalanced.csv"), row.names = FALSE)
write_fit("sleepstudy_unbalanced_correlated", Reaction ~ Days + (Days | Subject), sleep_unbalanced,
          sleep_contrasts, TRUE)
grid_unbalanced <- grid[sort(sample(nrow(grid), 720)), ]
write.csv(grid_unbalanced, file.path(out, "slope_grid_unbalanced.csv"), row.names = FALSE)
write_fit("slope_grid_unbalanced_correlated",
          y ~ div * vol + (1 + div + vol | target_task) + (1 | target_task:language) + (1 | mix),
          grid_unbalanced, grid_contrasts, TRUE)
